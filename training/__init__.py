"""The tiny world model's training data and its judge: `world` generates captioned videos of shapes
(numpy only); `evaluate` scores generated videos against their prompts with OpenCV, imported only
when asked for so the pack loads without it."""
