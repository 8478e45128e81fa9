#include <gtest/gtest.h>

#include <cstdio>

#include "cluster.h"
#include "commands.h"

namespace cairn {
namespace {

TEST(CliTest, SplitParent) {
  EXPECT_EQ(splitParent("/a/b/c"), (std::pair<std::string, std::string>{"/a/b", "c"}));
  EXPECT_EQ(splitParent("/a"), (std::pair<std::string, std::string>{"/", "a"}));
  EXPECT_EQ(splitParent("/a/b/"), (std::pair<std::string, std::string>{"/a", "b"}));
  EXPECT_EQ(splitParent("/"), (std::pair<std::string, std::string>{"/", ""}));
}

// `cairn append` then `cairn cat --records`: lines and fixed-size records come back as
// written, in order, once each.
TEST(CliTest, AppendAndCatRecords) {
  auto io = kj::setupAsyncIo();
  testing::InProcessCluster cluster(io, 3, 1 << 20);
  FileCache files(cluster.client());
  char* outBuf = nullptr;
  size_t outLen = 0;
  FILE* out = open_memstream(&outBuf, &outLen);
  FILE* err = tmpfile();
  CliContext c{cluster.client(), files, io.waitScope, out, err};
  auto input = [](const std::string& text) {
    FILE* f = tmpfile();
    fwrite(text.data(), 1, text.size(), f);
    rewind(f);
    return f;
  };
  std::string lines;
  for (int i = 0; i < 5000; ++i) lines += "line " + std::to_string(i) + "\n";
  FILE* in = input(lines);
  ASSERT_EQ(cmdAppend(c, "/log", 0, in), 0);  // made if missing
  fclose(in);
  in = input("0123456789abcdefXYZ");
  ASSERT_EQ(cmdAppend(c, "/log", 8, in), 0);  // 8-byte records, the last one shorter
  fclose(in);
  ASSERT_EQ(cmdCatRecords(c, "/log"), 0);
  fflush(out);
  EXPECT_EQ(std::string(outBuf, outLen), lines + "0123456789abcdefXYZ");
  // A record larger than one append can carry is refused, naming the limit.
  std::string big(2 << 20, 'x');
  in = input(big);
  EXPECT_EQ(cmdAppend(c, "/log", big.size(), in), 1);
  fclose(in);
  fclose(out);
  free(outBuf);
  fclose(err);
}

}  // namespace
}  // namespace cairn
