"""Task families: many related tasks over one dataset, and generating models for tasks nobody trained."""
