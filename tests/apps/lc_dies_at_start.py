#!/usr/bin/python3
"""A FastCGI app that exits at start, every time (a crash loop)."""
import sys

sys.stderr.write("lc_dies_at_start: exiting at start on purpose\n")
sys.exit(1)
