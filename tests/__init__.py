"""The test suite (a package, so that its folders can hold modules of the same name)."""
