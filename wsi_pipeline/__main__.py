"""``python -m wsi_pipeline`` (and ``torchrun -m wsi_pipeline train ...``): the command line."""

from wsi_pipeline.cli.main import main

main()
