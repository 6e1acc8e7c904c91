"""Reference implementations that need other package versions than ours, in their own venvs."""
