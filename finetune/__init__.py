"""Labrador-style fine-tune stage: guided answers -> SFT set -> LoRA fine-tune."""
