"""A stand-in for any script the engine can tune: it reads its settings as flags, does its
work, and prints `loss: <value>` on the last line that matters. Replace it with your own.

    python score.py --width 64 --dropout 0.1 --warmup 0 --seed 3

Here the "work" is a known noisy function, so what the engine keeps can be checked: widening
to 128 helps, warmup helps a little, dropout 0.3 hurts, and each seed adds its own luck.
"""
import argparse
import random

parser = argparse.ArgumentParser()
parser.add_argument("--width", type=int, required=True)
parser.add_argument("--dropout", type=float, required=True)
parser.add_argument("--warmup", type=int, required=True)
parser.add_argument("--seed", type=int, required=True)
args = parser.parse_args()

rng = random.Random(args.seed)
loss = 2.0
loss -= 0.08 if args.width >= 128 else 0.0
loss -= 0.03 if args.warmup > 0 else 0.0
loss += 0.5 * max(0.0, args.dropout - 0.1)
loss += rng.gauss(0.0, 0.04)  # run-to-run noise
print(f"loss: {loss:.6f}")
