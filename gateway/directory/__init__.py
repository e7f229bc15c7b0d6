"""Panel sign-in with the hospital's directory (LDAP / Active Directory), issue 17."""
