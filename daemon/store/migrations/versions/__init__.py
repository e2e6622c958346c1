"""Migration scripts, one per revision; never edit one that has been released."""
