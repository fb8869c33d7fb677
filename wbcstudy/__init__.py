"""wbcstudy."""
