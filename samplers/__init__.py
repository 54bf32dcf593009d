"""Rectified-flow schedules, solvers, guidance and frame conditioning."""
