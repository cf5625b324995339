"""Classic intensity processing: conversion to 8-bit, CLAHE."""

from medmtl.preprocess.intensity import apply_clahe, to_uint8

__all__ = ["apply_clahe", "to_uint8"]
