"""What the toolchain measures of a network: energy (operation counts priced per hardware target) and plots."""
