"""`python -m tron_cli ...` runs the `tron` command (torchrun uses this entry point)."""

from tron_cli.cli import main

if __name__ == "__main__":
    main()
