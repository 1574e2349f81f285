"""Defect detection: typed boxes for a tested board and its template."""
