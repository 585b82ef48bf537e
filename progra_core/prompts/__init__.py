"""Prompts: tool rendering, the PAG data roles, the policy's format, synthesis."""
