"""Fine-tuning long-context skills: synthetic data from the user's collection and LoRA training (PEFT/TRL).
Built by the fine-tuning issue; nothing here yet."""
