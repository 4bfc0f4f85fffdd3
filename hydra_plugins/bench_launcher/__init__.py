"""bench's own Hydra launcher plugin: ``hydra/launcher=parallel`` (several cells at once on one machine)."""
