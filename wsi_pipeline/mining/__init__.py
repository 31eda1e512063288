"""The unlabeled pool: a supervised detector screens unlabeled slides for regions worth learning from."""
