"""The end-to-end demo: presets per dataset and the front end (`presets`), the deployment half (`deploy`)."""
from .presets import PRESETS, DemoConfig, Recipe, demo_config, run_demo, run_front_end, steps_ratio

__all__ = ["PRESETS", "DemoConfig", "Recipe", "demo_config", "run_demo", "run_front_end", "steps_ratio"]
