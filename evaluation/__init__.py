"""`guide-align eval`: ask a target directly and through gateway variants, grade, report."""
