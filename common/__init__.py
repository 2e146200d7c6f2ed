"""Small pieces shared by every package (errors); depends on nothing of ours."""
