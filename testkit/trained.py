"""The tiny model's trained answers: the demo model's (`inference.demo_answers`), under the tests' old name."""

from inference.demo_answers import *  # noqa: F403
