"""The wbc kind's structure target: skimage on the host against the SLIC on the device, alone and in the adversarial
step (not a test; docs/wbc.md has the numbers).

    python benchmarks/bench_wbc_superpixel.py [--size 256] [--batches 4,16] [--step-batches 4] [--repeats 3]

Prints, per batch of `size` px photos ([-1, 1]): the host path as the kind runs it (`superpixel_target` per image in
a pool of 1 and of 2 threads), `superpixel_target_device` jitted; then the kind's compiled adversarial step (the
recipe's G and D widths; structure and content on 'pix', since the VGG file is not needed to time the superpixels)
with wbc.superpixel='device' (the target computed inside the step from this step's G) against the same step fed a
precomputed target, and the difference as a share of the step. Prints the load average: the machine is shared.
"""
import argparse
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "benchmarks")]

import cv2  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from common import table, timeit  # noqa: E402
from conftest import photo  # noqa: E402

from jaxsr import parallel  # noqa: E402
from jaxsr.train.kinds import wbc_representations as rep  # noqa: E402


def photos(n, size):
    """n photo crops in [0, 1]: four photographs, shifted crops for the repeats (up to 16 at 256 px)."""
    names = ("astronaut", "coffee", "chelsea", "rocket")
    return np.stack([photo(names[i % 4], size, size, top=8 * (i // 4), left=24 * (i // 4)) for i in range(n)])


def host_target(images, pool):
    """The kind's 'host' path: one image per thread."""
    return np.stack(list(pool.map(lambda im: rep.superpixel_target(im[None])[0], list(images))))


def kind(batch, size, folder):
    """The wbc kind at the recipe's widths on a folder of photos (as cartoons too)."""
    from jaxsr.recipes.wbc import get_config
    from jaxsr.train.kinds.wbc import WBC

    for sub in ("trainA", "trainB"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
        for i, im in enumerate(photos(4, size)):
            cv2.imwrite(os.path.join(folder, sub, f"{i}.png"), (im[..., ::-1] * 255).round().astype(np.uint8))
    c = get_config()
    c.wbc.update(init_steps=0, struct_losses=("pix",), cont_losses=("pix",), crop_size=size, load_size=size)
    c.data.update(train_dir=folder, val_dir=None, num_workers=0)
    c.val.update(every=0, at_start=False)
    c.train.batch_size = batch
    mesh = parallel.make_mesh()
    k = WBC(c, folder, mesh)
    return k, parallel.global_batch(mesh, next(k.data.train))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batches", default="4,16")
    ap.add_argument("--step-batches", default="4")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} CPU cores; "
          f"load average at start {os.getloadavg()}")
    device = jax.jit(rep.superpixel_target_device)
    rows = []
    for b in map(int, a.batches.split(",")):
        x = photos(b, a.size).astype(np.float32) * 2 - 1
        row = [b]
        for threads in (1, 2):
            with ThreadPoolExecutor(threads) as pool:
                row.append(f"{timeit(lambda: host_target(x, pool), warmup=1, repeats=a.repeats):.3f}")
        xd = jnp.asarray(x)
        row.append(f"{timeit(lambda: device(xd), warmup=1, repeats=a.repeats, sync=jax.block_until_ready):.3f}")
        rows.append(row)
    print(f"\nstructure target, seconds per batch of {a.size} px images (median of {a.repeats})")
    print(table(rows, ["batch", "host 1 thread", "host 2 threads", "device (jit)"]), flush=True)

    print(f"\nadversarial step (compiled), seconds, {a.size} px (median of {a.repeats}), a row as each batch size ends")
    rows = []
    for b in map(int, a.step_batches.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            k, batch = kind(b, a.size, folder)
            target = device(k.forward(k.state.params, k.state.buffers, batch["a"]))
            holder = {"s": k.state}

            def step(t):
                holder["s"], m = k.adv(holder["s"], batch, t, k.vgg_params)
                return m

            fed = timeit(lambda: step(target), warmup=1, repeats=a.repeats, sync=jax.block_until_ready)
            inside = timeit(lambda: step(None), warmup=1, repeats=a.repeats, sync=jax.block_until_ready)
            rows.append([b, f"{fed:.3f}", f"{inside:.3f}", f"{(inside - fed) / inside:.1%}"])
            print(table(rows, ["batch", "target fed", "wbc.superpixel='device'", "SLIC's share"]), flush=True)
    print(f"\nload average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
