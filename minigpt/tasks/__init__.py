"""Built-in tasks: each sub-package brings its own engine, data generators, rewards and evaluation."""
