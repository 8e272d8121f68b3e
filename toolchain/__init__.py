"""snntc: from an image classifier to a spiking network running on Loihi.

The pipeline is a chain of stages, each a function from one artifact to the next:
dataset -> ANN checkpoint -> SNN checkpoint -> fixed-point network -> netx file
-> simulation result -> energy report.
"""

__version__ = "0.1.0"
