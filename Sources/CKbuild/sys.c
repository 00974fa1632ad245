#define _GNU_SOURCE
#include <unistd.h>
#include "ckbuild.h"

int kb_syncfs(int fd) { return syncfs(fd); }
