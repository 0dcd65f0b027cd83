"""Prompt risk and response judge: data, training, calibrated linear heads, serving."""
