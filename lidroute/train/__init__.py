"""What the training recipes share: corpora, augmentation, synthetic speech, budgets.

Serving never imports it (an import contract in pyproject.toml says so).
"""
