"""Small dependency-free helpers at the bottom of the layering: every room of ``lib`` may import them, they
import nothing from ``lib``."""
