"""Intake: every channel's contact normalised into one Report.

Classification (GB/T 35561 categories), grading I-IV, location and the
correlation of many reports into one incident.  Pure logic, no I/O of its own.
"""
