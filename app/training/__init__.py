"""Persona-adapter training: chat-format data with loss on the final assistant turn, PEFT adapters, checkpoints."""
