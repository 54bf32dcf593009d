"""The tiny world model's training data, its judge and its trainer: `world` generates captioned videos of
shapes (numpy only); `evaluate` scores generated videos against their prompts with OpenCV, imported only
when asked for so the pack loads without it; `train` trains Tiny World by a recipe (`recipe`), stage by
stage (`vae_stage`, `data`, `text_stage`, `dit_stage`)."""
