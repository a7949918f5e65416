"""Training entry point: `python run_train.py --config configs/x4.py`. Lands with the trainer issue."""
import sys

if __name__ == "__main__":
    sys.exit("run_train.py: training lands with the trainer issue (see README).")
