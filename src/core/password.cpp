#include "core/password.h"

#include <crypt.h>
#include <openssl/crypto.h>

#include <cstring>

namespace px {

bool hash_password(const std::string& password, std::string* out, std::string* error) {
  if (password.empty() || password.size() > 1024) {
    *error = "password: 1 to 1024 characters";
    return false;
  }
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  if (!crypt_gensalt_rn("$y$", 0, nullptr, 0, setting, sizeof setting)) {
    *error = "password: cannot make a salt";
    return false;
  }
  crypt_data cd{};
  const char* h = crypt_r(password.c_str(), setting, &cd);
  if (!h || h[0] == '*') {
    *error = "password: hashing failed";
    return false;
  }
  *out = h;
  return true;
}

bool verify_password(const std::string& password, const std::string& hash) {
  crypt_data cd{};
  const char* h = crypt_r(password.c_str(), hash.c_str(), &cd);
  return h && h[0] != '*' && std::strlen(h) == hash.size() && CRYPTO_memcmp(h, hash.data(), hash.size()) == 0;
}

}  // namespace px
