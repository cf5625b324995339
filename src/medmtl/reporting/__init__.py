"""Turning run outputs into tables and figures."""
