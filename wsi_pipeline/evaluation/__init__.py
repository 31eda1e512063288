"""Detection evaluation: AP over IoU 0.10-0.70 (the paper's metric), recall, class confusion."""
