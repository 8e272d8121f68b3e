"""What runs an exported network and what it costs: the Lava simulator runner, the bit-exact emulator,
the Loihi 2 fit check, and energy tables (energy/*.json, every constant with its source)."""
