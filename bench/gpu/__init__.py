"""The CUDA path's check (``make gpu-prep`` here, ``make gpu-check`` on a GPU machine): README.md."""
