"""The simulators that run an exported network: the bit-exact emulator, Lava, and their comparison."""
