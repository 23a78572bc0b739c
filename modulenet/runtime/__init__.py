"""Runtime set-up, in one place: the trainer group's settings (`settings`), the device an
accelerator means and the one quiet Lightning trainer (`trainer`), and the precision chosen by
measurement (`precision`). Ours: the paper says nothing of devices or precision."""
