"""What the admin commands do beyond a pass: mailboxes, export, status, doctor, setup guides."""
