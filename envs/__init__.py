"""What the engine optimises: the `gpt` trainer, `synthetic` worlds with known truth, any
`command` that prints a metric, and a `python` callable. Importing the package registers every
kind in ENVS."""
from envs.base import ENVS, Env, Outcome, make_env
from envs.command import CommandEnv
from envs.gpt import GptEnv
from envs.python import PythonEnv
from envs.synthetic import BestReachable, Interaction, SyntheticEnv

__all__ = [
    "ENVS", "BestReachable", "CommandEnv", "Env", "GptEnv", "Interaction", "Outcome",
    "PythonEnv", "SyntheticEnv", "make_env",
]
