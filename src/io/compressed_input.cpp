// gzip-transparent input through zlib's gzFile, which reads plain files unchanged ("transparent"
// mode) and decompresses gzip ones, so one stream buffer serves both.
#include "dpo/io/compressed_input.h"

#include <cerrno>
#include <cstring>
#include <streambuf>
#include <vector>

#include <zlib.h>

#include "dpo/error.h"

namespace dpo {
namespace {

class GzipStreamBuffer : public std::streambuf {
 public:
  explicit GzipStreamBuffer(gzFile file) : file_(file), buffer_(size_t{1} << 16) {}
  ~GzipStreamBuffer() override { gzclose(file_); }
  GzipStreamBuffer(const GzipStreamBuffer&) = delete;
  GzipStreamBuffer& operator=(const GzipStreamBuffer&) = delete;

 protected:
  int_type underflow() override {
    if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
    const int n = gzread(file_, buffer_.data(), static_cast<unsigned>(buffer_.size()));
    // A corrupt or truncated gzip stream: throwing from here makes the istream set badbit, which
    // the readers report as a read error naming the file.
    if (n < 0) throw std::ios_base::failure("gzip data is corrupt");
    if (n == 0) {
      int code = Z_OK;
      gzerror(file_, &code);
      if (code != Z_OK && code != Z_BUF_ERROR) throw std::ios_base::failure("gzip data is corrupt");
      if (gzeof(file_) && code == Z_BUF_ERROR) throw std::ios_base::failure("gzip data is truncated");
      return traits_type::eof();
    }
    setg(buffer_.data(), buffer_.data(), buffer_.data() + n);
    return traits_type::to_int_type(*gptr());
  }
  // Only a rewind to the start is supported: the readers look at the first row, then read again.
  pos_type seekoff(off_type off, std::ios_base::seekdir dir, std::ios_base::openmode which) override {
    return dir == std::ios_base::beg ? seekpos(pos_type(off), which) : pos_type(off_type(-1));
  }
  pos_type seekpos(pos_type pos, std::ios_base::openmode) override {
    if (pos != pos_type(0) || gzrewind(file_) != 0) return pos_type(off_type(-1));
    setg(buffer_.data(), buffer_.data(), buffer_.data());
    return pos;
  }

 private:
  gzFile file_;
  std::vector<char> buffer_;
};

class PossiblyCompressedStream : public std::istream {
 public:
  explicit PossiblyCompressedStream(gzFile file) : std::istream(nullptr), buffer_(file) { rdbuf(&buffer_); }

 private:
  GzipStreamBuffer buffer_;
};

}  // namespace

std::unique_ptr<std::istream> open_possibly_compressed(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) fail("{}: cannot open: {}", path, std::strerror(errno != 0 ? errno : ENOENT));
  gzbuffer(file, 1 << 17);
  return std::make_unique<PossiblyCompressedStream>(file);
}

}  // namespace dpo
