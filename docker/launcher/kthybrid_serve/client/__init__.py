"""Client-side tools that talk to a running kthybrid server."""
