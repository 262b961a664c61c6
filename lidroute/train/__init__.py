"""What the training recipes share: corpora, augmentation, synthetic speech, budgets.

Serving never imports it (an import contract in pyproject.toml says so).
"""

#: A language decision this probable claims to be right 9 times in 10: the calibration target
#: that recipes fit to and evaluation checks.
CONFIDENT = 0.9
