"""The version of trtdeploy, at the bottom of the import layers so that sidecars and reports can name it."""
__version__ = "0.1.0"
