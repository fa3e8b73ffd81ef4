// px password hashes (libxcrypt): yescrypt "$y$" for new hashes; any crypt(5)
// hash libxcrypt knows (bcrypt "$2b$", ...) verifies. One check for pxadmind's
// users and tokens and for pxd's basic-auth access lists.
#pragma once
#include <string>

namespace px {

bool hash_password(const std::string& password, std::string* out, std::string* error);
// Constant-time comparison of the recomputed hash.
bool verify_password(const std::string& password, const std::string& hash);

}  // namespace px
