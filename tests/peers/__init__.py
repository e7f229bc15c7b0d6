"""Independent protocol peers (not written here) that interop tests point our drivers at."""
