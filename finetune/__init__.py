"""Fine-tuning long-context skills: synthetic data from the user's collection (`finetune.data`, with a
held-out split in `finetune.holdout`) and LoRA training with PEFT/TRL (`finetune.train`)."""
