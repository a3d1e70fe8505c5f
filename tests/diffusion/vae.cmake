# vae: diffusers AutoencoderKL against tests/fixtures/diffusion_vae (gen_diffusion_vae.py).
add_executable(test_diffusion_vae ${CMAKE_CURRENT_SOURCE_DIR}/test_vae.c)
target_link_libraries(test_diffusion_vae PRIVATE cmds_kernels_diffusion cmds_testutil cmds_warnings)
cmds_add_test(NAME diffusion.vae COMMAND test_diffusion_vae ${CMDS_FIXTURES}/diffusion_vae LABELS unit diffusion)
