"""Reports: findings, verdicts, compliance text, and the renderers (Markdown, HTML) that read report.json."""
