"""The evaluate stage: metrics with confidence intervals, paired tests, calibration, tables and plots."""
