"""SRFlow's train step memory on this machine (not a test): XLA's compiled temp memory of the NLL step (the kind's
loss: mean bits per dimension, its gradient and an Adam update) per batch size, remat (`use_chk`) off and on, each in
its own process (remat runs under XLA:CPU's memory schedule, process-wide, as run_train.py sets it).

  python benchmarks/bench_srflow_memory.py [--batches 1,2,4] [--crop 160] [--K 16] [--num_block 23]

The released x4 configuration (K 16, 23 blocks) compiles for many minutes on a small CPU: --K and --num_block shrink it.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def temp_gib(spec, batch, crop):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from jaxsr import archs

    model = archs.build(spec, rngs=nnx.Rngs(0))
    model.train()
    g_def, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(2.5e-4)

    @jax.jit
    def step(params, rest, opt, hr, lr):
        def loss(p):
            return jnp.mean(nnx.merge(g_def, p, rest).nll(hr, lr))

        value, grads = jax.value_and_grad(loss)(params)
        upd, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, upd), opt, value

    s = spec["scale"]
    hr = jax.ShapeDtypeStruct((batch, crop, crop, 3), jnp.float32)
    lr = jax.ShapeDtypeStruct((batch, crop // s, crop // s, 3), jnp.float32)
    compiled = step.lower(params, rest, tx.init(params), hr, lr).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**30


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,2,4")
    p.add_argument("--crop", type=int, default=160, help="HR crop (the recipe's 160)")
    p.add_argument("--K", type=int, default=16)
    p.add_argument("--num_block", type=int, default=23)
    p.add_argument("--one", help=argparse.SUPPRESS)  # batch,remat: measure one in this process
    a = p.parse_args()
    spec = {"arch": "srflow", "scale": 4, "K": a.K, "num_block": a.num_block}
    if a.one:
        batch, remat = (int(v) for v in a.one.split(","))
        if remat:
            from jaxsr import parallel

            parallel.use_memory_schedule({"use_chk": True})
        from jaxsr.archs.srflow import stack_blocks_for

        spec.update(use_chk=bool(remat), stack_blocks=stack_blocks_for(4, a.num_block, 4))
        print("RESULT " + json.dumps(temp_gib(spec, batch, a.crop)))
        return
    print(f"SRFlow x4, K {a.K}, {a.num_block} blocks, HR crop {a.crop}: XLA's compiled temp memory (GiB) of the NLL step")
    print("batch  no remat  remat  ratio")
    for batch in map(int, a.batches.split(",")):
        temps = []
        for remat in (0, 1):
            out = subprocess.run([sys.executable, __file__, "--K", str(a.K), "--num_block", str(a.num_block), "--crop",
                                  str(a.crop), "--one", f"{batch},{remat}"], capture_output=True, text=True, cwd=ROOT)
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if not line:
                sys.exit(f"batch {batch} remat {remat} failed:\n{out.stderr[-3000:]}")
            temps.append(json.loads(line[0][7:]))
        print(f"{batch:5d}  {temps[0]:8.2f}  {temps[1]:5.2f}  {temps[1] / temps[0]:5.2f}", flush=True)


if __name__ == "__main__":
    main()
