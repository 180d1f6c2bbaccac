"""The starter knowledge base: demonstration guideline summaries shipped with the package."""
