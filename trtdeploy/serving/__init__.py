"""Serving with NVIDIA Triton Inference Server: model repositories, the server process, load tests."""
